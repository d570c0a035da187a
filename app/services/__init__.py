"""Application logic between the HTTP layer and the database / torch."""
