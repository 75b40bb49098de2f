"""The two Redis scripts of a lease held by one owner at a time (SET NX PX, renewed):
ingest's MQTT session leases (ingest/lease.py) and the rules workers' shard leases
(rules_engine/shards.py) both hold theirs with these."""

from __future__ import annotations

# KEYS[1] the lease, ARGV[1] the owner, ARGV[2] the lease in ms: extend the lease if it is
# still ours, or take it back if it lapsed and nobody took it; 1 when we hold it
KEEP = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""

# KEYS[1] the lease, ARGV[1] the owner: delete the lease only if it is still ours
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
