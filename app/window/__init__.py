"""The main window and what hangs on it: docks and their layout, toolbar, status bar, menus,
help, recordings (open, replay timeline, record, export) and the Inspect/Compare controller."""
