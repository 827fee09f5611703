//! The pingora edge proxy and tower bridge. Serving moves here with the edge-proxy issue.
