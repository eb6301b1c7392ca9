"""Sites: workers inside each site's management network, fed through a Celery broker.

The central planner (CLI or server) keeps loading, diffing, planning and policies; the reads
and actions of a resource whose site label names a site travel as signed tasks to the queue
`site-NAME`, where a `metalform worker --site NAME` resolves that site's secrets itself and runs
the real provider. Only resource documents, action JSON and secret *references* cross the
broker; results come back as LiveResource JSON.
"""
