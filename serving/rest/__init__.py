"""TF Serving's REST API: the JSON codec (``codec``) and the HTTP adapter around the core."""
