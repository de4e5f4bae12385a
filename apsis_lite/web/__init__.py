"""The web side: the JSON API, the htmx pages, authentication, and the HTTP servers."""
