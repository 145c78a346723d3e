"""For tests and demos only: a local etcd cluster on loopback and the `make demo` driver.

Nothing in the daemon or the command line imports this package (a test checks it).
"""
