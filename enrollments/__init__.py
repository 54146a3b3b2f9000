"""Course enrollments: who is enrolled in which course overview (the mobile API reads them)."""
