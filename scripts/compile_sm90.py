"""Compile every Elastic Attention Triton kernel for NVIDIA sm_90 (H100/H200) down to a cubin, without a GPU.

Why it exists: the kernels' real target is an H200, but most work on them happens on CPU-only machines, whose tests
run them through Triton's interpreter, which compiles nothing. A refactor can then break the sm_90 build (a value
that must be a constexpr, a tile shape or dtype that does not lower, a launcher passing an argument the kernel no
longer takes) unnoticed until a GPU run. This catches it wherever triton's NVIDIA backend (with its ptxas) is
installed: on CPU, and unchanged on a GPU machine.

How: the public ops (``elastic_prefill`` with and without block-sparse heads, ``elastic_attention_pair`` forward and
backward in both streaming modes, ``elastic_decode``) run on tiny CPU tensors with every kernel's launch site
intercepted, so each compiled specialisation uses the launchers' own argument list; the CUDA branch's choices are
then applied (the tile/warp/stage configs the launchers autotune over, ``dot_flags`` of a CUDA tensor), and each one
goes through the kernel's own binder and ``warmup`` (compile only, no launch) under a stand-in driver that reports
GPUTarget("cuda", 90, 32), into a fresh cache. The fixed CUDA launch settings are read from the launchers
(``triton_decode.cuda_launch``, ``triton_prefill.BLOCK_SPARSE_CUDA_LAUNCH``). Kernels no scenario launches are
failures.

    python scripts/compile_sm90.py [--all] [--dtypes bf16,fp32] [--head-dims 64,128]

Prints ``ok|FAIL <kernel> <spec> ...`` per compile; the last line is a JSON summary ("failed": compiles that failed
and kernels no op launched; "over_shared_memory": launch sites none of whose configs fits an sm_90 block's shared
memory, so that would raise OutOfResources on an H200); exit status 1 when either is non-zero.
"""

import argparse, atexit, contextlib, importlib, inspect, json, os, pkgutil, shutil, subprocess, sys  # noqa: E401
import tempfile, time, traceback, types  # noqa: E401
from unittest import mock

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_sm90: unset TRITON_INTERPRET (the interpreter compiles nothing)")
CACHE = os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton-sm90-")  # fresh: every kernel compiles
atexit.register(shutil.rmtree, CACHE, True)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

try:
    import verl_ext.kernels.elastic_attention as EA
except ImportError:  # a bare checkout (the GPU image): kernels/ is verl_ext.kernels' source
    ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, ROOT)
    import verl_ext
    verl_ext.__path__.append(ROOT)
    import verl_ext.kernels.elastic_attention as EA
from verl_ext.kernels.elastic_attention import modes as M, ops, triton_common, triton_decode, triton_pair  # noqa: E402
from verl_ext.kernels.elastic_attention import triton_prefill, utils  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
SM90_SMEM = 232448  # bytes of shared memory one sm_90 block may opt into (227 KiB)
CUDA = torch.device("cuda")  # a device object; needs no GPU
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class Sm90Driver:
    """What triton's JIT asks the active driver while compiling (warmup), answered for an sm_90 GPU."""
    def get_current_target(self): return TARGET
    def get_current_device(self): return 0
    def get_current_stream(self, device=None): return 0
    def get_active_torch_device(self): return torch.device("cpu")


class Site:
    """Stands in for a kernel (or its autotuner) at a launch site: records the launch instead of running it."""
    def __init__(self, fn, configs=None):
        self.fn, self.configs = fn, configs

    def __getitem__(self, grid):
        return lambda *args, **kw: CALLS.append((self.fn, args, kw, self.configs))


CALLS = []


def kernels():
    """Every @triton.jit function of the package: {name: fn}, and their modules."""
    found, mods = {}, []
    for info in pkgutil.iter_modules(EA.__path__):
        mod = importlib.import_module(f"{EA.__name__}.{info.name}")
        mods.append(mod)
        found.update({n: f for n, f in vars(mod).items()
                      if isinstance(f, JITFunction) and f.fn.__module__ == mod.__name__})
    return found, mods


@contextlib.contextmanager
def intercepted(mods):
    """Launch sites record; the ops take their Triton path with CUDA's flags and tile configs (pair's CUDA branch).
    The launchers reach these helpers through their modules (``utils.resolve_backend``, ``triton_common.dot_flags``,
    ``triton_common.tuned``), so one patch each covers every op."""
    real_flags, real_launch = triton_common.dot_flags, triton_pair._launch
    with contextlib.ExitStack() as stack:
        patch = lambda obj, name, new: stack.enter_context(mock.patch.object(obj, name, new))  # noqa: E731
        for mod in mods:
            for name, obj in list(vars(mod).items()):
                if isinstance(obj, JITFunction):
                    patch(mod, name, Site(obj))
        patch(utils, "resolve_backend", lambda backend, device: "triton")
        patch(triton_common, "dot_flags", lambda q: real_flags(types.SimpleNamespace(dtype=q.dtype, device=CUDA)))
        patch(triton_common, "tuned", lambda name, kernel, configs, key: Site(getattr(kernel, "fn", kernel), configs))
        patch(triton_pair, "_launch", lambda name, device, *a, **kw: real_launch(name, CUDA, *a, **kw))
        yield


def scenarios(dtype, d):
    """(tag, run): tiny calls of the public ops. ``run`` returns the CUDA configs of its launches, or None when the
    launch site recorded them (the pair runs its CUDA branch)."""
    b, t, hq, hk, mask_block = 2, 80, 4, 2, 64
    x = lambda h: torch.randn(b, t, h, d, dtype=dtype)  # noqa: E731
    q, k, v = x(hq), x(hk), x(hk)
    mixed = torch.tensor([[M.FULL, M.STREAMING, M.STREAMING_BLOCKS, M.FULL], [M.STREAMING] * hq])

    def prefill(sparse):
        md = mixed.clone()
        if sparse:
            md[1] = M.BLOCK_SPARSE
        nb = -(-t // mask_block)
        mask = torch.ones(b, hq, nb, nb, dtype=torch.bool) if sparse else None
        with torch.no_grad():
            ops.elastic_prefill(q, k, v, md, block_mask=mask, mask_block=mask_block if sparse else None)
        if not sparse:  # CUDA without tile lists: the autotuned launch
            return triton_prefill._prefill_kernel("tuned").configs
        bm, bn = triton_prefill._tiles(CUDA, mask_block)  # CUDA with tile lists: fixed tiles, warps/stages as there
        return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, **triton_prefill.BLOCK_SPARSE_CUDA_LAUNCH)]

    def training_pair(round_block):
        qg, kg, vg = (y.clone().requires_grad_() for y in (q, k, v))
        z = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]], requires_grad=True)
        ops.elastic_attention_pair(qg, kg, vg, z, round_block=round_block).float().sum().backward()

    def decoding():
        with torch.no_grad():
            ops.elastic_decode(q[:, 0], k, v, torch.tensor([t, t // 2]), torch.tensor([[0, 1, 1, 0], [1] * hq]) > 0)
        launch = triton_decode.cuda_launch(dtype, d)
        return [triton.Config({"BLOCK_N": launch["BLOCK_N"]}, num_warps=launch["num_warps"],
                              num_stages=launch["num_stages"])]

    return [("modes", lambda: prefill(False)), ("block_sparse", lambda: prefill(True)),
            ("sa=streaming", lambda: training_pair(None)), ("sa=blocks", lambda: training_pair(64)),
            ("decode", decoding)]


def resources(cubin):
    """Registers per thread and stack bytes (where ptxas spills), from cuobjdump's resource usage of the cubin."""
    try:
        with tempfile.NamedTemporaryFile(suffix=".cubin", dir=CACHE) as f:
            f.write(cubin), f.flush()
            out = subprocess.run([triton.knobs.nvidia.cuobjdump.path, "-res-usage", f.name], capture_output=True,
                                 text=True, timeout=60).stdout
        use = dict(x.split(":", 1) for x in out.split("Function", 1)[1].split()[1:] if ":" in x)
        return f"regs={use['REG']} stack={use['STACK']}"
    except Exception:  # noqa: BLE001  (no cuobjdump: the cubin's size still proves it)
        return "regs=?"


def reason(e):
    """One line: where the compile failed and the innermost cause (triton chains its CompilationErrors)."""
    root = e
    while root.__cause__ is not None:
        root = root.__cause__
    where = str(e).strip().splitlines()[0] if root is not e else ""
    last = [ln.strip() for ln in str(root).splitlines() if ln.strip()]
    return " ".join(f"{where} {type(root).__name__}: {last[-1] if last else ''}".split())[:400]


def compile_one(fn, args, kw, cfg):
    """(ok, line, shared bytes) for one specialisation, compiled to a cubin by the kernel's binder (warmup)."""
    kw = {**{k: v for k, v in kw.items() if k not in ("num_warps", "num_stages")}, **cfg.all_kwargs()}
    consts = " ".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in kw.items()
                      if k not in ("HEAD_DIM", "ir_override", "maxnreg", "num_ctas"))
    try:
        kernel = fn.warmup(*args, grid=(1,), **kw)
        asm = kernel.asm
        if "cubin" not in asm:
            raise RuntimeError(f"no cubin produced (stages: {sorted(asm)})")
        shared = kernel.metadata.shared
        return True, (f"{consts} {resources(asm['cubin'])} shared={shared} "
                      f"ptx={len(asm['ptx'])}B cubin={len(asm['cubin'])}B"), shared
    except Exception as e:  # noqa: BLE001
        print(f"--- {fn.__name__} {consts}:", file=sys.stderr)
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        return False, f"{consts} {reason(e)}", 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", default="bf16,fp32", help="of bf16, fp16, fp32 (default bf16,fp32)")
    p.add_argument("--head-dims", default="64,128", help="of 32, 64, 128 (default 64,128)")
    p.add_argument("--all", action="store_true", help="every autotune config everywhere (default: all of them for "
                   "bf16 at the largest head_dim, the first elsewhere)")
    a = p.parse_args()
    t0, n_ok, failed, too_big, launched = time.time(), 0, 0, 0, set()
    dims = [int(d) for d in a.head_dims.split(",")]
    torch.set_num_threads(1)
    found, mods = kernels()
    driver.set_active(Sm90Driver())
    for dname, d in [(n, d) for n in a.dtypes.split(",") for d in dims]:
        recorded = []
        with intercepted(mods):
            for tag, run in scenarios(DTYPES[dname], d):
                CALLS.clear()
                configs = run()
                recorded += [(tag, fn, args, kw, cs or configs) for fn, args, kw, cs in CALLS]
        for tag, fn, args, kw, configs in recorded:
            launched.add(fn.__name__)
            every = a.all or (dname == "bf16" and d == max(dims)) or len(configs) == 1
            fits = bad = 0
            for cfg in configs if every else configs[:1]:
                ok, line, shared = compile_one(fn, args, kw, cfg)
                big = f" (over sm_90's {SM90_SMEM}B shared memory: cannot launch)" if shared > SM90_SMEM else ""
                fits, bad, n_ok = fits + (ok and not big), bad + (not ok), n_ok + ok
                print(f"{'ok' if ok else 'FAIL'} {fn.__name__} {dname}/d{d}/{tag} {line}{big}", flush=True)
            failed += bad
            if every and fits == 0 and bad == 0:  # compiles, but OutOfResources at every launch on sm_90
                too_big += 1
                print(f"FAIL {fn.__name__} {dname}/d{d}/{tag} no config fits sm_90's shared memory", flush=True)
    helpers = {n for n in found for f in found.values() if f is not found[n] and f"{n}(" in inspect.getsource(f.fn)}
    for name in sorted(set(found) - helpers - launched):
        failed += 1
        print(f"FAIL {name} - no public op launched it (add a scenario)", flush=True)
    print(json.dumps({"target": f"cuda:{TARGET.arch}", "compiled": n_ok, "failed": failed,
                      "over_shared_memory": too_big, "triton": triton.__version__,
                      "seconds": round(time.time() - t0, 1)}))
    return 1 if failed or too_big else 0


if __name__ == "__main__":
    sys.exit(main())
