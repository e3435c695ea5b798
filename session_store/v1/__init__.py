"""Generated gRPC and protobuf code for session_store.v1 (do not edit; `make proto`)."""
