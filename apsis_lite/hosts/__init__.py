"""Remote hosts: reaching them over ssh and installing the agent there.

``ssh``      the system's OpenSSH client, multiplexed, never prompting: a
             host's ``ssh`` command line, running a command there, and ssh's
             failures as one message naming the host
``install``  the stdlib-only agent shipped to a host as a zipapp, installed
             once per version under the remote user's cache folder
``groups``   a job's ``host:`` to a concrete host: a group picks one of its
             hosts (round-robin, random, least-busy)

Only the base modules and the agent are below this part; the engine's
launcher is above it.
"""
