from config_models.admin import ConfigurationModelAdmin
from django.contrib import admin

from catalog.models import CatalogIntegration

admin.site.register(CatalogIntegration, ConfigurationModelAdmin)
