"""dagnb: notebook-native task graphs with content-addressed caching."""
