"""Context-free RPC handlers: a request message in, a response message out.

Each class has one async method per RPC, named as in the proto, so the gRPC server and the REST
transcoder find them by the method descriptor's name and cannot drift apart. Errors are domain
errors; each transport maps them once (`dicomstore.api.status`).
"""
