"""`relayguard lab`: the incident (an open Apache forward proxy used to relay spam through a
local Postfix) replayed on loopback with real daemons, detected, fixed and proven closed."""
