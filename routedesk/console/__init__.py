"""The console: agents and supervisors in the browser (routedesk/console/app.py)."""
