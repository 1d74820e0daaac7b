from loraloop_client.cli import main

main()
