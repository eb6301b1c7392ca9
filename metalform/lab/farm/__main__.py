import sys

from metalform.lab.farm.runner import main

sys.exit(main())
