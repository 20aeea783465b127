"""Names Elastic Attention registers in verl (kept import-light: the plugin reads them in every process)."""

ENGINE_MODEL_TYPE = "elastic_language_model"  # verl engine model type of router training
