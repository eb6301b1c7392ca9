"""`metalform import`: adopt an existing fleet by writing the desired state it already has.

- `ranges`: what RANGE means (a CIDR, a span or @FILE) and its size limit;
- `bmc`: probe BMCs by address (Redfish, IPMI) through the providers' own read paths;
- `documents`: what was found -> Server and BiosTemplate documents (names, BIOS factoring);
- `output`: write them with ruamel.yaml, never over a document that already exists;
- `run`: the command itself, its options and its report;
- `sources`: `import maas|openstack|docker PROVIDER`, with one module per source
  (`from_maas`, `from_openstack`, `from_docker`) reading through its provider's client.
"""
