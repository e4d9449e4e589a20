#!/usr/bin/env bash
# Try Energy Flow Studio as a new user would: a virtual screen of a given size with a window
# manager (so the window has a title bar, is placed and resized as on a desktop), and the app
# started on it. Drive it with xdotool, look with ImageMagick's import.
#
# A developer tool, not part of CI. It needs Xvfb, openbox, xdotool and ImageMagick, e.g.
#   sudo apt-get install xvfb openbox xdotool imagemagick x11-utils
#
# Usage: scripts/try_as_user.sh [WxH] [DISPLAY_NUMBER] [-- app arguments...]
#   scripts/try_as_user.sh 1280x800 81
#   scripts/try_as_user.sh 1100x700 82 -- --preset tiny
# Then, e.g.:
#   export DISPLAY=:81
#   W=$(xdotool search --name "Energy Flow Studio" | tail -1); xdotool windowactivate --sync "$W"
#   xdotool key Escape                       # pause
#   xdotool mousemove 185 58 click 1         # a toolbar button (see the screenshot for places)
#   xdotool mousemove 450 450 mousedown 1 mousemove 600 400 mouseup 1   # turn the 3D view
#   xdotool key ctrl+s                       # save a checkpoint (a Qt file dialog opens)
#   import -window root /tmp/try/shot.png    # a screenshot of the whole screen
# Stop: close the window (Ctrl+Q), then kill the Xvfb and openbox process ids printed below.
# What a session in December 2026 found: docs/tried-as-a-user.md.
set -euo pipefail

SIZE=${1:-1280x800}
NUM=${2:-81}
shift $(( $# >= 2 ? 2 : $# ))
[[ ${1:-} == "--" ]] && shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${TRY_DIR:-/tmp/try-as-user}
mkdir -p "$OUT"

for tool in Xvfb openbox xdotool import; do
    command -v "$tool" >/dev/null || { echo "try_as_user.sh: $tool is not installed (see the header)" >&2; exit 1; }
done
if [[ ! $SIZE =~ ^[0-9]+x[0-9]+$ ]]; then
    echo "try_as_user.sh: size '$SIZE' is not WxH, e.g. 1280x800" >&2; exit 1
fi
if [[ -e /tmp/.X11-unix/X$NUM ]]; then
    echo "try_as_user.sh: display :$NUM is taken; pass another number" >&2; exit 1
fi

Xvfb ":$NUM" -screen 0 "${SIZE}x24" -nolisten tcp >"$OUT/xvfb.log" 2>&1 &
XVFB=$!
for _ in $(seq 50); do [[ -e /tmp/.X11-unix/X$NUM ]] && break; sleep 0.1; done
DISPLAY=":$NUM" openbox >"$OUT/openbox.log" 2>&1 &
WM=$!
sleep 1
PY="$ROOT/.venv/bin/python"
[[ -x $PY ]] || PY=python3
(cd "$ROOT" && export DISPLAY=":$NUM" && exec "$PY" main.py "$@" >"$OUT/app.log" 2>&1) &
APP=$!
echo "display :$NUM ($SIZE): Xvfb pid $XVFB, openbox pid $WM, app pid $APP; logs in $OUT"
echo "when done: kill $APP $WM $XVFB"
