"""The pipeline format: YAML loading with positions, pydantic models, validation rules."""
