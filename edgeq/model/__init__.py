"""The model as edgeq sees it: loading, data files, the flatbuffer, the op table, rewrites."""
