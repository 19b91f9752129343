"""The HTTP ingestion API (`journeyctl ingest`) and bulk import (`journeyctl import`)."""
