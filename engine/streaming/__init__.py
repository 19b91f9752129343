"""Everything that knows Kafka clients' insides: the faust app, the drain, the record writer, topics.

The rest of the engine calls the small surface these modules expose.
"""
