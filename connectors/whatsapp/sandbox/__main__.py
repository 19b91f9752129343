"""``python -m connectors.whatsapp.sandbox``."""

from connectors.whatsapp.sandbox import main

main()
