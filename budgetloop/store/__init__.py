"""Repository functions: queries and writes over the tables, session passed in keyword-only.

``get(*, session, change_request_id)`` style, as in Dispatch. Nothing here commits: the job or the
request that owns the unit of work does.
"""
