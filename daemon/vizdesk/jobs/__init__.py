"""Batch jobs: templates, the fixed launcher script, the job record, manager and API."""
