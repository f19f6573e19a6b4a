#!/usr/bin/env python3
"""One HTTPS request that checks the server's certificate against a CA, for the
integration tests: prints {"status", "headers", "body", "tls_version", "peer"}.

usage: https_get.py URL CA [name:value]...
"""

import json
import ssl
import sys
import urllib.error
import urllib.request


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    url, ca, *headers = argv
    context = ssl.create_default_context(cafile=ca)
    request = urllib.request.Request(url)
    for header in headers:
        key, value = header.split(":", 1)
        request.add_header(key.strip(), value.strip())
    try:
        response = urllib.request.urlopen(request, context=context, timeout=10)
    except urllib.error.HTTPError as error:
        response = error
    body = response.read().decode(errors="replace")
    print(json.dumps({"status": response.status, "headers": {k.lower(): v for k, v in response.headers.items()},
                      "body": body}))


if __name__ == "__main__":
    main(sys.argv[1:])
