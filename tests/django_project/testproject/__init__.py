"""A small Django project for the tests of eventbus.contrib.django."""
