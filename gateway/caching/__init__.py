"""What is kept across requests: whole answers, persisted documents, and the store processes share.

Above the documents (an answer is kept by its document's normal form) and below the loaders, which
share the upstream's bodies through it: it imports nothing of the gateway but `gateway.config`,
`gateway.errors`, `gateway.documents` and `gateway.observability`.
"""
