"""Where archives and backups are kept: a local directory or an S3-compatible store."""
