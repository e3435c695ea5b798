"""Pure domain of session-store: ids, placement, Keycloak's expiry rules, value objects. No I/O."""
