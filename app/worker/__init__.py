"""Training workers: `python -m app.worker` runs queued trainings (see app.worker.main)."""
