"""Scale-out on Ray: a Ray Serve deployment of the rerank service, and Ray Data batch reranking (extra ``[ray]``)."""
