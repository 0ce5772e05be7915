"""Feature layer: the feature schema, vocabularies, versioned Parquet storage and
batching into TorchRec ``KeyedJaggedTensor`` s."""
