"""meddx.report"""
