"""Models (engineers): champion, challenger and previous; promote and roll back."""

from dashboard.pages import models_page

models_page()
