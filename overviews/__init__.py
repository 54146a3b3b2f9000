"""The LMS side: course overviews (what publishes write and the catalog sync enriches)."""
