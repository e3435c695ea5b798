"""gRPC servicers: proto <-> model conversion and error -> status mapping. Thin by design."""
