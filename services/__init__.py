"""The web service, the study runner and the database migrations."""
