"""Redis storage: key layout, Lua scripts, shards, routing. Knows nothing about gRPC."""
