"""Settings, database wiring, logging and other cross-cutting pieces."""
