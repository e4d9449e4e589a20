"""Files: read as regular files only, written atomically, locked for one writer, checked
before the work that fills them (inputs and outputs kept apart), and OS/HDF5 errors in one line."""
