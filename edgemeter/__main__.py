from __future__ import annotations

from edgemeter.cli import main

raise SystemExit(main())
