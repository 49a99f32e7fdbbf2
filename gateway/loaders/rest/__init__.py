"""The REST backend: the Django Packages APIv4 over HTTP, and what it keeps of it.

From the wire up: wire.py decodes the APIv4's JSON and turns it into records; client.py is
the process's HTTP client of the upstream (`Upstream`: one keep-alive pool, a cap on requests
in flight, retries with backoff, a bound on body size), behind the circuit breaker of
breaker.py; fetcher.py reads what one request needs through the caches below; backend.py
(`RestBackend`) answers the `Backend` interface, and says in which order a record is looked
up; warm.py keeps the catalogue snapshot fresh for a server, and turns.py has its refresh's
long work done a chunk at a time, the event loop running other tasks between two.

What the backend keeps, nearest first:

layer          holds                     key                  lifetime              filled by
-------------  ------------------------  -------------------  --------------------  ---------------
memo           the records this request  id; slug             the request           RestBackend,
(memo.py)      read, and each grid's                                                with every
               and package's relation                                               record it reads
               ids

in flight      this request's fetches,   upstream path and    the request           Fetcher
(fetcher.py)   shared by its lookups     query

snapshot       the three whole lists,    `catalogue`, in the  the resource          Fetcher, for a
(snapshot.py)  indexed for filters and   resource cache       cache's; `gateway     lookup or for
               orders                                         serve` renews it      warm.py
                                                              before it ends
                                                              (warm.py)

resource       decoded details, list     upstream path and    fresh for             Fetcher; a list
cache          pages, searches, the      query: `grids/7/`,   `cache_ttl`, served   page also
(cache.py)     snapshot                  `search/?q=orm`      `cache_stale` more    primes its
                                                              if the upstream       items by id and
                                                              fails; 32 MiB, LRU    slug

shared bodies  raw upstream bodies and   upstream URL's       kept `cache_ttl +     Fetcher, one
(shared.py,    404s, for every process   hash, path and       cache_stale` by       process a body,
`--cache`)     and host                  query                Redis, fresh for      under a lock
                                                              `cache_ttl`
"""
