"""`meddx serve`: the HTTP inference service (FastAPI) and the clinicians' web viewer, over in-memory predictors."""
