"""Reports: the Kafka reader, the funnel and delivery aggregate, and its renderers."""
