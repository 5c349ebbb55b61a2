#!/bin/sh
# The image's entrypoint: run a cxrgan tool or any command from the project root.
#   entrypoint.sh tools/sample.py --n 500     -> python tools/sample.py --n 500
#   entrypoint.sh sample.py --n 500           -> the same (tools/ may be left out)
#   entrypoint.sh make all DATA=nih ...       -> make all DATA=nih ...
#   entrypoint.sh                             -> make help
set -eu
PYTHON="${CXRGAN_PYTHON:-python}"
cd "${CXRGAN_ROOT:-$(dirname "$0")/..}"

if [ "$#" -eq 0 ]; then
    set -- make help
fi

case "$1" in
    *.py)
        tool="$1"
        shift
        if [ ! -f "$tool" ] && [ -f "tools/$tool" ]; then
            tool="tools/$tool"
        fi
        if [ ! -f "$tool" ]; then
            echo "error: no tool $tool; the tools are: $(cd tools && ls ./*.py | sed 's|^\./||' | tr '\n' ' ')" >&2
            exit 2
        fi
        exec "$PYTHON" "$tool" "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
