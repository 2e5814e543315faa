"""A template kstatpy provider (``template``): widgets with kstats. The plugin is ``.provider``."""
