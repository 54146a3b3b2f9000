"""The HTTP client for course-discovery: ``client`` (``CatalogClient``, ``ClientConfig``, URL
helpers) and ``errors`` (the typed errors and the one retry rule). ``requests`` and the standard
library only: no Django, no model, nothing else of the project, so it can be used and tested
outside a Django process."""
