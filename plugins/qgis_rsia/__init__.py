"""rsia_geo QGIS plugin: spoken, region-restricted search through a local rsia_geo service.

The plugin imports neither torch nor rsia_geo: it talks to ``rsia-geo serve`` over HTTP.
"""


def classFactory(iface):
    """Create the plugin (called by QGIS).

    Args:
        iface: The QGIS interface.

    Returns:
        The plugin instance.
    """
    from .plugin import RsiaSearchPlugin

    return RsiaSearchPlugin(iface)
