"""The config: typed schemas of the groups, the resolvers the YAML files use, and the checks Hydra cannot do."""
