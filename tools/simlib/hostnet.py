# The virtual board's "Wi-Fi": the host's own network, always joined. Same methods as
# network.WLAN(network.STA_IF), which bms.mqtt uses on a real board.


class HostWifi:
    def active(self, on=None):
        return True

    def connect(self, ssid=None, password=None):
        pass

    def disconnect(self):
        pass

    def isconnected(self):
        return True
