"""The Parquet archive: closed hours of raw points and daily aggregates, written once
(again only when late readings change them) to a directory or an S3-compatible store."""
