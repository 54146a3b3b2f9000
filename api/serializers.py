"""JSON shapes of the API (read-only)."""

from __future__ import annotations

from rest_framework import serializers

from enrollments.models import CourseEnrollment
from overviews.models import CATALOG_FIELDS, CHECK_FIELDS, CONTENT_FIELDS, SYNC_FIELDS, CourseOverview


class CourseOverviewSerializer(serializers.ModelSerializer):
    """Everything about an overview, sync metadata included: last changed, last checked, last
    attempted and a pending refresh request (the staff API)."""

    id = serializers.CharField(read_only=True)

    class Meta:
        model = CourseOverview
        fields = ("id", *CONTENT_FIELDS, *CATALOG_FIELDS, *SYNC_FIELDS, *CHECK_FIELDS)
        read_only_fields = fields


class LearnerCourseSerializer(serializers.ModelSerializer):
    """An overview as a learner's app sees it: content and catalog-owned fields, no sync internals."""

    id = serializers.CharField(read_only=True)

    class Meta:
        model = CourseOverview
        fields = ("id", *CONTENT_FIELDS, *CATALOG_FIELDS)
        read_only_fields = fields


class CourseEnrollmentSerializer(serializers.ModelSerializer):
    course = LearnerCourseSerializer(read_only=True)

    class Meta:
        model = CourseEnrollment
        fields = ("created", "mode", "is_active", "course")
        read_only_fields = fields
