"""HTTP routers: the JSON API under /api and the operational endpoints at the root."""
